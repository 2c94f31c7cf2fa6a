"""Evaluation and exports (no ROS imports)."""
