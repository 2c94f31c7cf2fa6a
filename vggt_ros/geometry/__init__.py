"""Camera geometry: pose encoding, projection, intrinsics under image transforms."""
