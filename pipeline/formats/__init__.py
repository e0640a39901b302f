"""The raw MNIST formats (IDX, Keras npz, CSV) read into parsed records on the executors: shared by ingest, which
turns them into the raw table, and predict, which scores them."""
