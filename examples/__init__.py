"""The bundled example files, in each source's raw layout (installed as meddata.examples)."""
