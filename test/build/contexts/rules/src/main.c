m1
