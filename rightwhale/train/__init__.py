"""Networks in motion, shaped like Flax's ImageNet example: the original's nolearn NeuralNet as pure JAX functions.

- state.py: the `Task` a stage supplies, the `TrainState` (batch_stats and a PRNG key), Lasagne's
  optimizers and L2, jitted `train_step` / `eval_step`;
- sharding.py: the device mesh, replicated state, sharded batches;
- feed.py: batches of uint8 images onto the devices, read ahead; `evaluate` and `predict`;
- loop.py: `fit`, nolearn's epochs, table, best weights and early stopping, resumable to the same bits;
- tta.py: test-time augmentation averaged through the inverse affines.
"""
