from flatkit.cli import main

main()
