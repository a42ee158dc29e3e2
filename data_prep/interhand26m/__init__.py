"""The `interhand26m` TFDS builder (`interhand26m_dataset_builder.py`) and its pure preprocessing.

Modules: `raw` (file layout, JSON selection), `preprocess` (per-example math), `convert` (records to
examples, in-process or in Beam workers), `interhand26m_dataset_builder` (the builder and `build`).
This file imports nothing: `tfds build data_prep/interhand26m` loads the builder module as
`interhand26m.interhand26m_dataset_builder`, and a second import under another name would define
the builder class twice.
"""
