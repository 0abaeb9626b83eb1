"""Stage 1, data: dataset loaders (``builtin``), subsets chosen elsewhere (``subset``), ZCA
whitening (``zca``), interchange formats for distilled sets and subsets (``interop``), and the
papers' datasets prepared from local copies (``imagenet_subsets``, ``tiny_imagenet``)."""
