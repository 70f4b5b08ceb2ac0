import warnings

# torch_geometric 2.7 calls the deprecated torch.jit.script at import; the message says nothing to our users
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
