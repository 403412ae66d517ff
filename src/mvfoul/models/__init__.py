"""Models (config group ``model``): video backbones by name, view pooling, the two-headed net."""
