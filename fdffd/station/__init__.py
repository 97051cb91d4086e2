"""fdffd.station"""
