"""Scripts of the ``hyperunet`` Auto3DSeg algorithm template (imported as ``hyperunet.scripts`` by BundleGen)."""
