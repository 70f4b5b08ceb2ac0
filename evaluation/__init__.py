"""Evaluation of whole networks: measured and predicted metrics, the OFA manager, ImageNet accuracy and the
SQLite results store. Used by eval_topk_ofa.py and rm_search alike; sits above models/ and iterators/."""
