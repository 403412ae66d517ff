"""Evaluation: the official SoccerNet-MVFoul metric and predictions files (:mod:`.official`),
checkpoint evaluation and reports."""
