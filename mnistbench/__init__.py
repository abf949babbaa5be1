"""mnistbench: train the source articles' CNNs on MNIST on every device, time them honestly, keep the history."""
