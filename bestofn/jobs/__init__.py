"""What the commands do, as library functions without argparse: ``run`` (best-of-N over an
input file, resumable), ``rerank`` (several scorers over given candidates), ``curve`` (exact
best-of-k curves), ``bench`` (what selection costs) and ``validate`` (what a config would
refuse in an input file). Commands parse flags, call these and print; experiments and apps
call them directly."""
