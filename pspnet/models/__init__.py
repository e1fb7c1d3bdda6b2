"""The models: layers, backbones and their weight files, the presets, the builder, the model file.

Imports the data floor and the ground below it, nothing above.
"""
