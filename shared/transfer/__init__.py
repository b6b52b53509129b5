"""transfer: does what generated images say about a classifier hold on real photos of the same synsets?"""
