"""Data preparation: the InterHand2.6M TFDS builder and a synthetic InterHand2.6M-format generator.

- `data_prep.interhand26m`: raw InterHand2.6M (+ MANO) -> TFRecords in `dir_jax.data.schema`'s format.
- `data_prep.synthetic`: a small rendered dataset in the raw InterHand2.6M layout, for tests and demos.
- `data_prep.synthetic_mano`: a stand-in MANO pair in the official file layout (the licensed model cannot ship).
"""
