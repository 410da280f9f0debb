"""The UML COW file format: header layouts, geometry (cow_sizes), bitmaps, images."""
