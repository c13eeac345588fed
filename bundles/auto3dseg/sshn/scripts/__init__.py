"""Scripts of the ``sshn`` Auto3DSeg algorithm template (imported as ``sshn.scripts`` by BundleGen)."""
