"""Evaluation: the official metric and predictions files, checkpoint evaluation, reports."""
