"""The site: the model of a snapshot, its pages, exports, changes and citations, the build."""
