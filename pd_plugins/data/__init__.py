"""Stage 1, data: dataset loaders (``builtin``), subsets chosen elsewhere (``subset``), ZCA
whitening (``zca``) and interchange formats for distilled sets and subsets (``interop``)."""
