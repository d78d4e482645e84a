"""Evaluation: metrics, predicting over a dataset, reports, plots, task relatedness."""
