from phototag.cli import main

main()
