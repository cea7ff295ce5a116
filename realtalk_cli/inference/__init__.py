"""What dubbing (offline and live) and training share: model directories, the tracking pass, the render stage."""
