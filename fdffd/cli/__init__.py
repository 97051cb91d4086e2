"""fdffd.cli"""
