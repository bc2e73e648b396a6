__version__ = "0.1.0"

# Artifacts (exported folders, engine manifests) carry this format number. A runtime refuses folders
# written with another major format; bump it whenever graph inputs/outputs or the manifest change shape.
ARTIFACT_FORMAT = 1
