"""fdffd.job"""
