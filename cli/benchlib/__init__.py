"""Support code for `jetraft bench`: server launcher, load generators, result tables."""
