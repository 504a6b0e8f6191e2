from modelferry.cli.main import main

main()
