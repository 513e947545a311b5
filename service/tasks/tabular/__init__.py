"""Regression and binary classification on a table row: the card's features in, one number out."""
