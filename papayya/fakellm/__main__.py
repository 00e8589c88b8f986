from papayya.fakellm.server import main

main()
