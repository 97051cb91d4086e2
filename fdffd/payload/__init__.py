"""fdffd.payload"""
