"""Planning: the package index client, the plan of cells, and the one plan store."""
