"""The LBDT network, one file per paper box (see docs/model.md).

`build.build_model(name)` builds a variant; `official.load_official(path)` loads released weights;
`complexity` counts parameters and MACs.
"""
