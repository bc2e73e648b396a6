"""What an export folder is: its typed manifest, tensor names, and files with their checksums."""
