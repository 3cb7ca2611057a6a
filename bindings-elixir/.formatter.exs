[inputs: ["{mix,.formatter}.exs", "{lib,test,mix}/**/*.{ex,exs}"]]
