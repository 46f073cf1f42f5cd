"""The harvest cache: one on-disk format (format), its writer, its reader and the one-byte
log-probability code (quant). The harvest writes it and the distiller reads it; neither
reaches into the other."""
