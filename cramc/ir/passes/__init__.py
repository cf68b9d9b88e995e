"""IR passes, one file each, run in order by cramc.ir.passes.manager."""
