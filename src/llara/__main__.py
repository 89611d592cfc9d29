from llara.cli import main

main()
