"""Figures: matplotlib (paper figures, PNG + PDF) and plotly (interactive HTML). Plots read only result files."""
