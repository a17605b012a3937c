"""necroui: the operations console and command line of NecroCode Dispatcher."""
