"""Input pipeline: reads the converted InterHand2.6M TFRecords (tfds) and augments them."""
