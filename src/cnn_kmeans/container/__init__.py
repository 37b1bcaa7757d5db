"""SageMaker adapters: the /opt/ml environment, hyperparameters, metrics, content types,
the inference handlers, the Flask app and the `train` / `serve` entrypoints."""
