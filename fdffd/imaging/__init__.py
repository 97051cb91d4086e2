"""fdffd.imaging"""
