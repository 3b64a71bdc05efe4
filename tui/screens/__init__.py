"""The screens of the app, one per file: set-up (model, method, data, review) and run, monitor, runs."""
