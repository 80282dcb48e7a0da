"""The schema function: reads the replicated tables' columns from the source's catalog and
keeps them, versioned, in the bus's schema table (dmsbus.schemas)."""
