"""Networks and how they are trained: backbones (``models``), DSA augmentation (``augment``),
evaluation protocols (``evaluate``), batched features (``features``) and execution speed-ups
(``accel``). Every stage uses them."""
