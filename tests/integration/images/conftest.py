def pytest_configure(config):
    config.addinivalue_line(
        "markers", "images: builds a container image with buildah (root, buildah and mmdebstrap; "
                   "minutes cold, seconds cached)")
