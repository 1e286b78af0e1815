"""Geometry and statistics: template registration and level planes, the canonical slice, hemisphere ROIs."""
