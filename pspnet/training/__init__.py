"""Training: the run's config, recipe (model, loss, optimizer), callbacks, resume state,
run folder, distribution, and ``train(config)`` itself (``pspnet.training.loop``).

Imports the floors below it (inference, models, data, the ground), nothing above.
"""
