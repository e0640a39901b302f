"""What the pipeline reads, decoded on the executors: the raw MNIST formats (IDX, Keras npz, CSV) as parsed records,
shared by ingest, predict and the scheduled batches; and ordinary image files (PNG/JPEG) listed safely and brought
to the MNIST convention, shared by predict and the scheduled batches."""
