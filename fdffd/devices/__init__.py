"""fdffd.devices"""
