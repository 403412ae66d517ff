"""mvfoul: multi-view soccer foul recognition (SoccerNet-MVFoul / VARS), configured with Hydra."""

__version__ = "0.1.0"
