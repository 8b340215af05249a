"The demo and the ablations, built from the method and its evaluation."
